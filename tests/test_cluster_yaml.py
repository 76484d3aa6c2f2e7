"""cluster.yaml passes the Ray autoscaler's own schema validation (offline: `ray up` has no dry run)."""

from pathlib import Path

import yaml


def test_cluster_yaml_is_a_valid_autoscaler_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).parents[1] / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema error
    assert config["head_node_type"] in config["available_node_types"]
    assert any(t["resources"].get("GPU") for t in config["available_node_types"].values())
