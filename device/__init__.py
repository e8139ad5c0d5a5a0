"""faceedge device stage: runs on the Raspberry Pi with numpy, OpenCV and a LiteRT runtime only.

Nothing under this package may import TensorFlow, `train` or `convert` (a test enforces it).
The model manifest (`device.manifest`), the crop function (`device.crop`) and the runtime
(`device.runtime`) live here because the other stages must agree with the device about them.
"""

__version__ = "0.1.0"
