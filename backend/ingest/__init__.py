"""Kafka ingest: the producer that carries source chunks, and the consumer that lands them in bronze without loss or duplicates."""
