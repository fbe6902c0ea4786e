/* Executable packers: legitimate tools, but rare on servers and common in Linux malware. */

rule Linux_ELF_UPX_Packed
{
    meta:
        author = "scanner project"
        description = "Linux ELF executable packed with UPX (suspicious on a server, not proof)"
        severity = 40
        scan_context = "file"
        reference = "https://upx.github.io/"

    strings:
        $magic = "UPX!"
        $info = "$Info: This file is packed with the UPX executable packer"

    condition:
        uint32(0) == 0x464c457f and
        ($magic in (0..1024) or $info)
}
