from device.deploy.cli import main

raise SystemExit(main())
