/*
 * The EICAR anti-malware test file. The 68-byte test string is matched in three parts whose
 * offsets must line up, so this file is not itself an EICAR sample.
 */

rule EICAR_Test_File
{
    meta:
        author = "scanner project"
        description = "EICAR anti-malware test file (harmless test string, not malware)"
        severity = 90
        scan_context = "file, memory"
        reference = "https://www.eicar.org/download-anti-malware-testfile/"

    strings:
        $head = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
        $name = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"
        $tail = "$H+H*"

    condition:
        for any i in (1..#head) : (
            $name at (@head[i] + 28) and $tail at (@head[i] + 63)
        )
}
