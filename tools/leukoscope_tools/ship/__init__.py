"""Shipping a model: int8 export and quantisation, bundles and their reports, signing and pushing
to Pis."""
