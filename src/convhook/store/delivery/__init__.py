"""Delivery: endpoints, claiming due deliveries, recording attempts, the delivery log."""
