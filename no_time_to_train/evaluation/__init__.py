"""COCO results and evaluation: RLE encoding, gathering, COCOeval, per-class reports, mIoU."""
