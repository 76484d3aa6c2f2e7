"""The Ray Serve editing service: deployments and app builder (``app.py``), upload decoding (``images.py``),
and the web page (``static/``)."""
