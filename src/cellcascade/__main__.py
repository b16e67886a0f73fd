from cellcascade.cli import main

raise SystemExit(main())
