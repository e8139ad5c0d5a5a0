"""The imx500 variant (Raspberry Pi AI Camera): the trained model compiled for the Sony IMX500 sensor.

Sony's tools (MCT, imxconv-tf) need TensorFlow 2.15 and run in their own environment
(`make setup-imx500`); this package is both sides of that boundary:

- `handoff`: the Keras 3 model as data - its layer graph and weights (host side);
- `env`: where the environment is, and running the child in it (host side);
- `child`: the script that runs INSIDE it - rebuild in tf.keras 2.15, MCT quantization, the host
  simulation, imxconv-tf (imports nothing of this project);
- `variant`: the pipeline's entry - checks, manifest, per-split simulation outputs (host side).
"""
