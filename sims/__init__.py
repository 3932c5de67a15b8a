"""SIMS: the Serious Incident Management System."""
