"""`visionbatch train`: choose the batch, run real Ultralytics training, record what it cost."""
