//! End-to-end tests of the real `berth` binary: each test spawns `berth serve` on a free loopback
//! port over a data directory of its own and talks to it over HTTP, as a user or an agent would.

mod a2a;
mod cli;
mod client_cli;
mod console;
mod crash;
mod demo;
mod docker;
mod docker_pool;
mod external;
mod failed;
mod first_hour;
mod heartbeats;
mod inside;
mod leader;
mod pool;
mod restart;
mod server;
mod webdriver;
