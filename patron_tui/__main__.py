from patron_tui.cli import main

raise SystemExit(main())
