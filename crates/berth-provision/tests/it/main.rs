//! Integration tests of berth-provision's backends. The process provisioner is driven with
//! `/bin/sh -c` scripts as runtimes, so every test runs real child processes.

mod control_plane;
mod control_plane_tls;
mod docker;
mod process;
