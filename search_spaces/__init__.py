"""Search-space YAML files shipped with kd-study (quickstart, paper grids, full TPE)."""
