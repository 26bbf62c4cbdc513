# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vmcrypt_global_optspecs
    string join \n config= json q/quiet v/verbose agent= allow-outside-folder h/help V/version
end

function __fish_vmcrypt_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vmcrypt_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vmcrypt_using_subcommand
    set -l cmd (__fish_vmcrypt_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -s V -l version -d 'Print version'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "provider" -d 'Manage key providers'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "encrypt" -d 'Encrypt a disk (raw image or VMDK descriptor) with a new key'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "decrypt" -d 'Decrypt an encrypted disk'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "inspect" -d 'Show a disk\'s encryption metadata (no key material)'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "rekey" -d 'Rotate a disk\'s keys: --shallow re-wraps its DEK under a new KEK (metadata only); --deep re-encrypts every sector under a new DEK, in place and crash-safely. A disk that `vmcrypt serve` holds is rekeyed --deep online, by the server, while guests run'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "jobs" -d 'The online job on a served disk (a deep rekey the server is carrying out), if any'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "resume" -d 'Finish an in-place job (encrypt, decrypt, deep rekey; of a disk or, given a .vmx, of a VM) that a crash, kill or Ctrl-C interrupted. Harmless when nothing is under way'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "vm" -d 'Whole VMs: the .vmx and every disk it references'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "recover" -d 'Break-glass access to an encrypted disk without vmcrypt'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "agent" -d 'The host agent: a long-running key cache that keeps VMs usable through a KMS outage (docs/agent.md)'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "serve" -d 'Serve an encrypted disk live: over NBD (QEMU, qemu-img, qemu-io) and/or as a vhost-user-blk device that QEMU guests boot from, without decrypting it (docs/live-io.md). The disk is locked while served'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "topology" -d 'The KMS topology doctor: single points of failure, bad orders, dependency loops and failover timing of a described topology (docs/topology.md)'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "completions" -d 'Shell completions (bash, zsh, fish, elvish, powershell) on stdout, made from this command line\'s own definition'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "man" -d 'Manual pages (troff): vmcrypt(1) on stdout, or given DIR, a page for every command written there (vmcrypt.1, vmcrypt-encrypt.1, vmcrypt-provider-add-kmip.1, ...)'
complete -c vmcrypt -n "__fish_vmcrypt_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "add-native" -d 'Add the embedded key provider (creates its keystore, or registers an existing one)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "add-kmip" -d 'Add a KMIP key provider: a cluster of replicating servers tried in the given order'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "check" -d 'Check a provider: for KMIP, each server\'s reachability, TLS trust, KMIP version and latency; with --replication, how long a new key takes to reach every server'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "list" -d 'List the configured providers'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "default" -d 'Make a provider the default for new keys'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "remove" -d 'Remove a provider from the configuration (its keystore file is kept)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "backup" -d 'Export a native provider\'s key under a passphrase'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "restore" -d 'Import a native provider from a backup'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and not __fish_seen_subcommand_from add-native add-kmip check list default remove backup restore help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -l keystore -d 'Keystore file (default: beside the config file)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-native" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l server -d 'A server as HOST:PORT; repeat in the order to try them (local site first)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l ca -d 'CA certificate(s) that sign the servers\' certificates (PEM)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l cert -d 'Client certificate (PEM)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l key -d 'Client private key (PEM)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l server-name -d 'Name the server certificates must carry (default: each server\'s host)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l timeout -d 'Seconds a server may take to answer before the next one is tried' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l hedge-ms -d 'Key fetches (Get) only: when a server has not answered after this many milliseconds, also ask the next one; the first good answer wins. 0 turns hedging off' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l demote-secs -d 'Key fetches only: try a server that was unreachable after the others for this many seconds (matters in a long-running agent). 0 turns it off' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l no-reuse -d 'Open a new TLS connection for every operation instead of keeping connections open'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from add-kmip" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -l replication -d 'Create a probe key, time its arrival on each server, then destroy it'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from list" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from list" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from default" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from default" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from default" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from default" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from default" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from default" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from default" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from remove" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from remove" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from remove" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -l out -d 'Backup file to create' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -l passphrase-file -d 'Read the passphrase from the first line of this file' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -l allow-short-passphrase -d 'Accept a passphrase shorter than 12 characters. The backup can be attacked offline by whoever copies it; a short passphrase is guessed'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from backup" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -l name -d 'Name of the restored provider (default: the name the backup records; a backup made before vmcrypt recorded it needs --name)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -l keystore -d 'Keystore file to create (default: beside the config file)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -l passphrase-file -d 'Read the passphrase from the first line of this file' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from restore" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "add-native" -d 'Add the embedded key provider (creates its keystore, or registers an existing one)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "add-kmip" -d 'Add a KMIP key provider: a cluster of replicating servers tried in the given order'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "check" -d 'Check a provider: for KMIP, each server\'s reachability, TLS trust, KMIP version and latency; with --replication, how long a new key takes to reach every server'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the configured providers'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "default" -d 'Make a provider the default for new keys'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a provider from the configuration (its keystore file is kept)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "backup" -d 'Export a native provider\'s key under a passphrase'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "restore" -d 'Import a native provider from a backup'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand provider; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l provider -d 'Key provider for the new KEK (default: the configured default)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l sector-size -d 'XTS data unit size [default: 4096; an online encryption of a served disk uses 512, the block size its guests were given]' -r -f -a "512\t'512-byte data units'
4096\t'4096-byte data units'"
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l output -d 'Write the result to a new disk (a raw image gets PATH.vmcrypt beside it; a VMDK output PATH.vmdk gets PATH-flat.vmdk)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l threads -d 'Worker threads (default: all cores)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l rate -d 'Online --in-place only (a disk `vmcrypt serve --plaintext` holds): at most this many MB/s. Default: as for `rekey --deep`' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l format -d 'Treat DISK as a raw image even though its first bytes name another format (qcow2, VHD, VHDX, VDI, QED, LUKS): only for a raw image that merely starts with such bytes' -r -f -a "raw\t'A raw image'"
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l in-place -d 'Rewrite the disk itself'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand encrypt" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l output -d 'Write the result to a new disk (a raw image gets PATH.vmcrypt beside it; a VMDK output PATH.vmdk gets PATH-flat.vmdk)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l threads -d 'Worker threads (default: all cores)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l rate -d 'Online --in-place only (a disk `vmcrypt serve` holds): at most this many MB/s. Default: as for `rekey --deep`' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l in-place -d 'Rewrite the disk itself'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand decrypt" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand inspect" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand inspect" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand inspect" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand inspect" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand inspect" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand inspect" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand inspect" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l provider -d 'Provider of the new KEK (default: the configured default)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l threads -d 'Worker threads for --deep (default: all cores)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l rate -d 'Online --deep only: at most this many MB/s (10^6 bytes). Default: the job holds the disk at most half the time while guests do I/O, and goes full speed while they idle' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l shallow -d 'New KEK, DEK re-wrapped: metadata only, seconds'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l deep -d 'New DEK, every sector re-encrypted in place (crash-safe; `resume` finishes it)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand rekey" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -l follow -d 'Follow the job until it is done (Ctrl-C stops following; the job goes on)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand jobs" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -l threads -d 'Worker threads (default: all cores)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand resume" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -f -a "encrypt" -d 'Encrypt a VM: one KEK, its configuration sealed, every disk in place under its own DEK'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -f -a "decrypt" -d 'Decrypt a VM: every disk, then the .vmx back to its original bytes'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -f -a "rekey" -d 'Rotate a VM\'s keys: --shallow wraps every key under a new KEK (no data rewritten)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -f -a "inspect" -d 'Show a VM\'s encryption state and each disk\'s (no key material)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and not __fish_seen_subcommand_from encrypt decrypt rekey inspect help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -l provider -d 'Key provider for the VM\'s KEK (default: the configured default)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -l sector-size -d 'XTS data unit size for the disks' -r -f -a "512\t'512-byte data units'
4096\t'4096-byte data units'"
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -l threads -d 'Worker threads (default: all cores)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from encrypt" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -l threads -d 'Worker threads (default: all cores)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from decrypt" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l provider -d 'Provider of the new KEK (default: the VM\'s current provider)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l rate -d '--deep of a running VM: the most each server rekeys its disk at, in MB/s (default: one that leaves the guests at least half of their I/O)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l shallow -d 'New KEK, DEK re-wrapped: metadata only, seconds'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l deep -d 'New DEK, every sector re-encrypted in place (crash-safe; `resume` finishes it)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from rekey" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from inspect" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from inspect" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from inspect" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from inspect" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from inspect" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from inspect" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "encrypt" -d 'Encrypt a VM: one KEK, its configuration sealed, every disk in place under its own DEK'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "decrypt" -d 'Decrypt a VM: every disk, then the .vmx back to its original bytes'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "rekey" -d 'Rotate a VM\'s keys: --shallow wraps every key under a new KEK (no data rewritten)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Show a VM\'s encryption state and each disk\'s (no key material)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand vm; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -f -a "dm-table" -d 'Print the dm-crypt table line that opens the payload without vmcrypt (reveals the key)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and not __fish_seen_subcommand_from dm-table help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -l reveal-key -d 'Acknowledge that the output contains the disk\'s key in clear'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from dm-table" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from help" -f -a "dm-table" -d 'Print the dm-crypt table line that opens the payload without vmcrypt (reveals the key)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand recover; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -f -a "serve" -d 'Serve key requests on a Unix socket (mode 0600; only this user and root are served), holding every key fetched or created in locked memory. Stops cleanly on SIGTERM or Ctrl-C, zeroing the cache'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -f -a "status" -d 'Show what a running agent holds (provider and key id of each cached key; never keys)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -f -a "forget" -d 'Make a running agent forget cached keys (zeroed at once), e.g. after revoking a KEK on purpose: without this the agent would go on serving it until it restarts'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and not __fish_seen_subcommand_from serve status forget help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -l socket -d 'Socket path' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -l cache-size -d 'How many KEKs the cache holds (locked memory: 32 bytes each)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -l max-in-flight -d 'Key requests under way at one provider at a time; the rest wait in the agent (a boot storm must not drown the key servers)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -l socket -d 'Socket path (default: --agent)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l socket -d 'Socket path (default: --agent)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l provider -d 'Every key of this provider (with --key-id: that key only)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l key-id -d 'One key of --provider' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l all -d 'Every cached key'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from forget" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Serve key requests on a Unix socket (mode 0600; only this user and root are served), holding every key fetched or created in locked memory. Stops cleanly on SIGTERM or Ctrl-C, zeroing the cache'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show what a running agent holds (provider and key id of each cached key; never keys)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from help" -f -a "forget" -d 'Make a running agent forget cached keys (zeroed at once), e.g. after revoking a KEK on purpose: without this the agent would go on serving it until it restarts'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand agent; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l nbd -d 'Where to serve NBD: a Unix socket path (created mode 0600), PORT (TCP on 127.0.0.1), or HOST:PORT. TCP has no TLS: see below' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l vhost-user -d 'Where to serve vhost-user-blk: a Unix socket path (created mode 0600) for QEMU\'s `-chardev socket` (libvirt `<disk type=\'vhostuser\'>`). Frontends may disconnect and reconnect; the disk stays open' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l queues -d 'vhost-user: virtqueues offered, each served by a worker thread of its own (default: the number of cores, at most 16)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l queue-size -d 'vhost-user: descriptors per virtqueue (a power of two)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l io-threads -d 'vhost-user: helper threads that move one half of each large request (256 KiB and more) while the queue\'s worker moves the other, so one request in flight uses two cores; 0 moves everything on the queue\'s workers (default: one per queue)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l serial -d 'vhost-user: the serial the guest reads (GET_ID, up to 20 bytes; default: the disk\'s file name)' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l name -d 'NBD export name (default: the disk\'s file name); clients asking for the default export ("") get it too' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l stall-timeout -d 'Seconds an NBD client may stall in the middle of a request before it is cut off' -r
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l plaintext -d 'Serve a plaintext disk (one vmcrypt has not encrypted) as it is, under the same lock: no key is needed, and no other program may write it meanwhile'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l read-only -d 'Refuse writes, trims and zeroing'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l status -d 'Serve nothing: show the server that holds DISK, if any, and its online job (as `vmcrypt jobs DISK`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand serve" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -f -a "check" -d 'Check a topology file. Exit 0 when it has no error (warnings allowed), 1 with errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -f -a "init" -d 'Write a topology file to start from, on standard output'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and not __fish_seen_subcommand_from check init help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -l dot -d 'Also write the topology as a Graphviz DOT graph to this file (sites as clusters, loops and single points of failure in red, failover orders numbered)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -l svg -d 'Also draw the topology as an SVG picture (laid out by vmcrypt) to this file' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -l live -d 'Also measure the servers of each provider this host\'s configuration has (as `provider check --replication`: reachable, TLS trust, latency, replication lag, with a probe key created and destroyed) and flag those that are down or lag'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -l from-config -d 'Fill in the providers, their servers and orders, timeouts, hedging and demotion from this host\'s vmcrypt configuration (else: a commented skeleton)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from help" -f -a "check" -d 'Check a topology file. Exit 0 when it has no error (warnings allowed), 1 with errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from help" -f -a "init" -d 'Write a topology file to start from, on standard output'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand topology; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand completions" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand completions" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand completions" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand completions" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand completions" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand completions" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand man" -l config -d 'Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand man" -l agent -d 'Route every key operation through the host agent on this socket (`vmcrypt agent serve`): keys it holds work even when every key server is down' -r -F
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand man" -l json -d 'Print one JSON document on stdout (never key material, except `recover`)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand man" -s q -l quiet -d 'Only print errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand man" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand man" -l allow-outside-folder -d 'Allow a VMDK\'s flat extent, or a VMX\'s disks, to resolve (symlink, absolute path) outside the folder of the file that names them; refused by default, since a hostile descriptor could otherwise point a job at any file'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand man" -s h -l help -d 'Print help'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "provider" -d 'Manage key providers'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "encrypt" -d 'Encrypt a disk (raw image or VMDK descriptor) with a new key'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "decrypt" -d 'Decrypt an encrypted disk'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "inspect" -d 'Show a disk\'s encryption metadata (no key material)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "rekey" -d 'Rotate a disk\'s keys: --shallow re-wraps its DEK under a new KEK (metadata only); --deep re-encrypts every sector under a new DEK, in place and crash-safely. A disk that `vmcrypt serve` holds is rekeyed --deep online, by the server, while guests run'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "jobs" -d 'The online job on a served disk (a deep rekey the server is carrying out), if any'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "resume" -d 'Finish an in-place job (encrypt, decrypt, deep rekey; of a disk or, given a .vmx, of a VM) that a crash, kill or Ctrl-C interrupted. Harmless when nothing is under way'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "vm" -d 'Whole VMs: the .vmx and every disk it references'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "recover" -d 'Break-glass access to an encrypted disk without vmcrypt'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "agent" -d 'The host agent: a long-running key cache that keeps VMs usable through a KMS outage (docs/agent.md)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "serve" -d 'Serve an encrypted disk live: over NBD (QEMU, qemu-img, qemu-io) and/or as a vhost-user-blk device that QEMU guests boot from, without decrypting it (docs/live-io.md). The disk is locked while served'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "topology" -d 'The KMS topology doctor: single points of failure, bad orders, dependency loops and failover timing of a described topology (docs/topology.md)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "completions" -d 'Shell completions (bash, zsh, fish, elvish, powershell) on stdout, made from this command line\'s own definition'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "man" -d 'Manual pages (troff): vmcrypt(1) on stdout, or given DIR, a page for every command written there (vmcrypt.1, vmcrypt-encrypt.1, vmcrypt-provider-add-kmip.1, ...)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and not __fish_seen_subcommand_from provider encrypt decrypt inspect rekey jobs resume vm recover agent serve topology completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "add-native" -d 'Add the embedded key provider (creates its keystore, or registers an existing one)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "add-kmip" -d 'Add a KMIP key provider: a cluster of replicating servers tried in the given order'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "check" -d 'Check a provider: for KMIP, each server\'s reachability, TLS trust, KMIP version and latency; with --replication, how long a new key takes to reach every server'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "list" -d 'List the configured providers'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "default" -d 'Make a provider the default for new keys'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "remove" -d 'Remove a provider from the configuration (its keystore file is kept)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "backup" -d 'Export a native provider\'s key under a passphrase'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from provider" -f -a "restore" -d 'Import a native provider from a backup'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "encrypt" -d 'Encrypt a VM: one KEK, its configuration sealed, every disk in place under its own DEK'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "decrypt" -d 'Decrypt a VM: every disk, then the .vmx back to its original bytes'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "rekey" -d 'Rotate a VM\'s keys: --shallow wraps every key under a new KEK (no data rewritten)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from vm" -f -a "inspect" -d 'Show a VM\'s encryption state and each disk\'s (no key material)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from recover" -f -a "dm-table" -d 'Print the dm-crypt table line that opens the payload without vmcrypt (reveals the key)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from agent" -f -a "serve" -d 'Serve key requests on a Unix socket (mode 0600; only this user and root are served), holding every key fetched or created in locked memory. Stops cleanly on SIGTERM or Ctrl-C, zeroing the cache'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from agent" -f -a "status" -d 'Show what a running agent holds (provider and key id of each cached key; never keys)'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from agent" -f -a "forget" -d 'Make a running agent forget cached keys (zeroed at once), e.g. after revoking a KEK on purpose: without this the agent would go on serving it until it restarts'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from topology" -f -a "check" -d 'Check a topology file. Exit 0 when it has no error (warnings allowed), 1 with errors'
complete -c vmcrypt -n "__fish_vmcrypt_using_subcommand help; and __fish_seen_subcommand_from topology" -f -a "init" -d 'Write a topology file to start from, on standard output'
