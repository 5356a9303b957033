"""pytest-vfio-platform: HIL tests for VFIO platform assignment without an IOMMU."""
