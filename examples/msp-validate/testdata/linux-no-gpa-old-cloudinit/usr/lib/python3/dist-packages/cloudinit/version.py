# fixture of cloud-init's version module
__VERSION__ = "23.4"
_PACKAGED_VERSION = "@@PACKAGED_VERSION@@"
