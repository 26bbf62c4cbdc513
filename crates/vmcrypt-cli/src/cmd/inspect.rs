//! `inspect`: what a disk is and how it is encrypted; needs no key.

use serde_json::json;
use vmcrypt_core::Result;
use vmcrypt_core::disk::Disk;

use crate::cli::InspectArgs;
use crate::output::Out;

pub fn run(a: &InspectArgs, out: &Out) -> Result<()> {
    let d = Disk::open(&a.disk)?;
    let mut human = format!(
        "disk:         {}\nformat:       {}\npayload:      {} ({} bytes at offset {})\n",
        d.path().display(),
        d.format().as_str(),
        d.payload_path().display(),
        d.payload_len(),
        d.payload_offset()
    );
    let doc = match d.encryption() {
        None => {
            human.push_str("encrypted:    no");
            json!({
                "disk": d.path(), "format": d.format().as_str(), "payload": d.payload_path(),
                "payload_size": d.payload_len(), "payload_offset": 0, "encrypted": false,
            })
        }
        Some(e) => {
            let keys = e.keys();
            human.push_str(&format!(
                "encrypted:    yes ({})\ncipher:       XTS-AES-256, {}-byte data units\ndisk uuid:    {}\ngeneration:   {}\nmetadata:     {}\n",
                e.state.as_str(),
                e.identity.sector_size.bytes(),
                e.identity.uuid,
                e.generation,
                d.metadata_path().display()
            ));
            for (p, k) in &keys {
                human.push_str(&format!("key:          provider {p}, key id {k}\n"));
            }
            if let Some(vm) = &e.vm_uuid {
                human.push_str(&format!("vm uuid:      {vm}\n"));
            }
            let human_trim = human.trim_end().to_string();
            human = human_trim;
            json!({
                "disk": d.path(), "format": d.format().as_str(), "payload": d.payload_path(),
                "payload_size": d.payload_len(), "payload_offset": d.payload_offset(),
                "encrypted": true, "state": e.state.as_str(),
                "cipher": "XTS-AES-256", "sector_size": e.identity.sector_size.bytes(),
                "disk_uuid": e.identity.uuid, "key_generation": e.generation, "vm_uuid": e.vm_uuid,
                "metadata": d.metadata_path(),
                "keys": keys.iter().map(|(p, k)| json!({"provider": p, "key_id": k})).collect::<Vec<_>>(),
            })
        }
    };
    out.result(&human, doc);
    Ok(())
}
