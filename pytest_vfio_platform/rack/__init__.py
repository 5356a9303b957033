"""A local labgrid rack: QEMU boards that look, over the network, like boards in a device lab."""
