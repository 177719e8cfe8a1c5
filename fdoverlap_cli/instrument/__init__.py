"""`fdoverlap instrument`: NVTX stage ranges put into a Python program without editing it.

spec     the spec format (JSON or TOML) -> rules
presets  fastdeploy, transformers, and the tool's own engine
launch   the parent: the program's environment, then exec
hook     the child: the import hook and the ranges (standard library and nvtx only)
boot/    sitecustomize.py, first on the program's PYTHONPATH: loads the hook
"""
