"""A folder for ``PYTHONPATH`` (its ``sitecustomize`` blocks TensorFlow); a package only so
that wheels ship it."""
