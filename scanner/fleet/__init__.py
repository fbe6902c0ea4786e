"""A fleet of appliances on one PostgreSQL: the job queue, the registry, the scan manager."""
