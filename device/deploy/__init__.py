"""`device deploy`, `rollback`, `deploy-model` (device/deploy/cli.py): the host side builds a bundle
(bundle.py, wheel.py) and ships it over ssh (ship.py, device/ssh.py); the device side is remote.py,
a stdlib-only script run there with the Pi's own python3."""
