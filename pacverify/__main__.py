from pacverify.cli import main

raise SystemExit(main())
