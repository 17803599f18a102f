"""Write a tar of (name, bytes) members exactly as given: the fault tests build broken shards with it."""

import io
import tarfile


def write_tar(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
