"""The camera: what a capture yields, one backend per file (picked by name), and the one owner of
the device."""
