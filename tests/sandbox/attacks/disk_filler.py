"""Attack: fill the disk (once 800 MB in the sandbox's folder and 400 MB in its /tmp). Its
writable folders are tmpfs mounts of a fixed size now: the write fails at the quota."""

from airlab.techniques import Hooks, Technique, register


class FillsDisk(Hooks):
    def on_model(self, model):
        block = b"x" * (16 << 20)
        for folder in ("/tmp", "."):
            for i in range(64):  # 1 GB per folder
                with open(f"{folder}/fill-{i}.bin", "wb") as f:
                    f.write(block)
        return model


register(Technique("file_fills_disk", "general", "writes a gigabyte", hooks=FillsDisk,
                   workloads=("charlm",)))
