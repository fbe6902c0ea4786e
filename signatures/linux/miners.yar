/* Cryptocurrency miners: XMRig and its many rebrands, by their configuration and strings. */

rule Linux_Miner_XMRig_Config
{
    meta:
        author = "scanner project"
        description = "XMRig-style miner configuration (pool login and donate level)"
        severity = 60
        scan_context = "file, memory"
        reference = "https://xmrig.com/docs/miner/config"

    strings:
        $donate = "\"donate-level\"" ascii
        $pools = "\"pools\"" ascii
        $stratum = /stratum\+(tcp|ssl|tls):\/\/[0-9A-Za-z.\-]{1,128}:[0-9]{1,5}/ ascii
        $algo = /"algo" ?: ?"(rx\/0|cn\/r|rx\/wow|argon2\/chukwa|kawpow)"/ ascii

    condition:
        filesize < 1MB and $donate and $pools and ($stratum or $algo)
}

rule Linux_Miner_XMRig_Binary
{
    meta:
        author = "scanner project"
        description = "XMRig miner program or a rebrand of it (binary or process memory)"
        severity = 70
        scan_context = "file, memory"
        reference = "https://github.com/xmrig/xmrig"

    strings:
        $ua = "XMRig/" ascii
        $opt1 = "--donate-level" ascii
        $opt2 = "--randomx-mode" ascii
        $opt3 = "stratum+tcp://" ascii
        $log = "randomx: init dataset" ascii nocase

    condition:
        ($ua and 2 of ($opt*)) or ($log and $opt1 and $opt3)
}
