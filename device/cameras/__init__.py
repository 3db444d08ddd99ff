"""Camera backends: replay (a folder of images), opencv (USB/UVC), picamera (Raspberry Pi)."""
