"""End-to-end suites: real training loops of tiny models on the CPU, alerts received over HTTP on loopback."""
