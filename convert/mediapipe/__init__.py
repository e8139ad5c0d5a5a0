"""MediaPipe in its own environment: TFLite metadata for the exported models, and MediaPipe's
ImageClassifier as a second reader of them (tests). See env.py and child.py."""
