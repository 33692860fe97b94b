"""Output folders of the commands: refused with one line naming the option, before any work is done.

The folder checks and the guard (lock, refusal of a folder holding what a command writes,
``--overwrite``) live in theory.output_folder, which every layer can import without torch.
"""
from theory.output_folder import check_output_folder, output_dir, output_folder  # noqa: F401  (re-exported for the commands)
