"""Where candidate jobs run: one executor interface, with inline, local-subprocess and SLURM back ends."""
