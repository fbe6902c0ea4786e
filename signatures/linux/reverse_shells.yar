/* Reverse-shell one-liners as they appear in scripts, cron jobs and shell history. */

rule Linux_Script_Reverse_Shell
{
    meta:
        author = "scanner project"
        description = "Shell or interpreter one-liner that connects a shell to a remote host"
        severity = 70
        scan_context = "file, memory"
        reference = "https://attack.mitre.org/techniques/T1059/004/"

    strings:
        $bash_tcp = /(bash|sh) -i >& ?\/dev\/tcp\/[0-9A-Za-z.\-]{1,64}\/[0-9]{1,5} 0>&1/
        $dev_tcp_exec = /exec [0-9]{1,3}<>\/dev\/tcp\/[0-9A-Za-z.\-]{1,64}\/[0-9]{1,5}/
        $nc_exec = /\bnc(at)? [^\n]{0,64}-e \/bin\/(ba)?sh\b/
        $fifo_nc = /mkfifo \/tmp\/[A-Za-z0-9_.]{1,32}; ?cat \/tmp\/[A-Za-z0-9_.]{1,32} ?\| ?\/bin\/(ba)?sh -i/
        $py_pty = /socket\.socket\([^\n]{0,200}os\.dup2\([^\n]{0,200}(pty\.spawn|subprocess\.call)\(\[?["']\/bin\/(ba)?sh/

    condition:
        filesize < 10MB and any of them
}
