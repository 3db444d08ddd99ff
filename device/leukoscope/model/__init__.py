"""Model bundles: the manifest, the verified bundle with its analyser, the TFLite runtime and
classifier, and the versioned model store."""
