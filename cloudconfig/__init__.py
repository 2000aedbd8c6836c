"""Provisioning: cloud-config and Ignition generation for manager and worker nodes."""
