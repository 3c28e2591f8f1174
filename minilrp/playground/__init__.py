"""The LRP playground: ``python -m minilrp.playground`` (also ``minilrp-playground``) serves
a page on 127.0.0.1 where you draw or pick an image, turn an LRP rule's knobs and watch the
heatmap, the relevance at every layer and the ledger follow.

Files: ``cli.py`` (the command), ``app.py`` (the Flask app, its workers and coalescer),
``settings.py`` (the catalogue of methods and knobs, request checks), ``compute.py`` (what a
request computes), ``static/`` (the page). Needs the ``playground`` extra (Flask).
"""
