"""Loading: the model under evaluation and its SAEs from the bundled zoo, TransformerLens names, Hugging Face
folders, SAELens folders and sae_lens releases, with the checks that a loaded weight is usable."""
