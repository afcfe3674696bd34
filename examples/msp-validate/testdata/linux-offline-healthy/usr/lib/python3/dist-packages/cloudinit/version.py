# fixture of cloud-init's version module
__VERSION__ = "24.4"
_PACKAGED_VERSION = "@@PACKAGED_VERSION@@"
