"""xvad: explainable real-time video anomaly detection."""
__version__ = "0.1.0"
from .models import CRNN

