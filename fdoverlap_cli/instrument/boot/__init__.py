"""The folder `fdoverlap instrument` puts first on a child's PYTHONPATH: it holds only sitecustomize.py."""
