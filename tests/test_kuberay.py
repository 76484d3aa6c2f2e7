"""deploy/kuberay: the checked-in manifests are what the generator writes from serve/config.yaml, they parse,
the RayService's Serve config passes Ray's own schema, and the RayJob's entrypoint names files that exist."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "deploy" / "kuberay"


def generator():
    spec = importlib.util.spec_from_file_location("kuberay_generate", KUBERAY / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_manifests_are_the_generated_ones_and_valid():
    from ray.serve.schema import ServeDeploySchema

    from facegen.config import load_config

    gen = generator()
    rendered = gen.render()
    assert set(rendered) == {"rayjob.yaml", "rayservice.yaml"}
    for name, text in rendered.items():
        assert (KUBERAY / name).read_text() == text, f"{name} is stale: python deploy/kuberay/generate.py"
    job, service = (yaml.safe_load(rendered[name]) for name in ("rayjob.yaml", "rayservice.yaml"))

    # The Serve config inside the RayService: Ray's schema, and serve/config.yaml's app and deployments.
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(serve_config)
    source = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    (app,), (source_app,) = schema.applications, source["applications"]
    assert app.import_path == source_app["import_path"] == "serve.app:build_app"
    assert [d["name"] for d in serve_config["applications"][0]["deployments"]] == \
        [d["name"] for d in source_app["deployments"]]
    assert serve_config["applications"][0]["deployments"] == source_app["deployments"]
    assert schema.http_options.host == "0.0.0.0" and schema.http_options.port == source["http_options"]["port"]
    assert all(app.args[key].startswith("s3://") for key in ("bundle", "classifier"))

    # The train job: every file its entrypoint names ships in the image, and the overrides are valid keys.
    words = shlex.split(job["spec"]["entrypoint"])
    files = [w for w in words if w.startswith(gen.APP_DIR + "/")]
    assert words[0] == "python" and files[0].endswith("/jobs/train.py") and len(files) == 2
    for path in files:
        assert (ROOT / path.removeprefix(gen.APP_DIR + "/")).is_file(), path
    config = words[words.index("--config") + 1].removeprefix(gen.APP_DIR + "/")
    cfg = load_config(str(ROOT / config), [w for w in words[3:] if "=" in w])
    assert cfg.train.use_gpu and cfg.train.storage_path.startswith("s3://")
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["FACEGEN_WAIT_FOR_NODES_S"]

    # Both clusters: KubeRay v1, this Ray's version, autoscaling worker groups that may scale to zero.
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile
    for manifest, cluster in ((job, job["spec"]["rayClusterSpec"]), (service, service["spec"]["rayClusterConfig"])):
        assert manifest["apiVersion"] == "ray.io/v1"
        assert cluster["rayVersion"] == ray.__version__ and cluster["enableInTreeAutoscaling"] is True
        for group in cluster["workerGroupSpecs"]:
            assert group["minReplicas"] == 0 < group["maxReplicas"]
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_check_mode_reports_stale_files(tmp_path, capsys):
    gen = generator()
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "rayservice.yaml").write_text("stale")
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1
    assert "rayservice.yaml" in capsys.readouterr().err
