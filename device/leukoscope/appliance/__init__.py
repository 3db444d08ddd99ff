"""The running appliance: the daemon's work loop, records and samples, state, indicator, GPIO,
sd_notify and the control socket."""
