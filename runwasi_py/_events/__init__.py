"""Task events to containerd: the topic table, the publisher and the Forward wire codec."""
