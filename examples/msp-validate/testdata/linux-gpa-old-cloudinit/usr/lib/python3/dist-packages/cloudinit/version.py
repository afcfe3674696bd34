# fixture of cloud-init's version module
__VERSION__ = "23.1"
_PACKAGED_VERSION = "@@PACKAGED_VERSION@@"
