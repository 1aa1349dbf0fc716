"""`python -m study.cli`: the `kd-study` command."""
from study.cli.verbs import main

raise SystemExit(main())
