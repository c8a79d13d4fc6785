"""robablate's Hydra launcher plugin (`hydra/launcher=slurm`); Hydra only loads plugins from hydra_plugins."""
