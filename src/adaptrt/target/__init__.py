"""The glioblastoma target study: recurrence analyses, voxel random forests, RTOG / EORTC CTVs."""
