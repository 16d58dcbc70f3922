"""Deployment: the docker-compose production stack, validated offline and run against the test servers."""
