//! Accounts, local domains and aliases.

use super::*;

impl Directory for SledStore {
    fn create_account(&self, address: &str, password_hash: &str) -> Result<()> {
        let _w = self.lock();
        if self.tree.contains_key(keys::account(address))? {
            return Err(StoreError::Exists(format!("account {address}")));
        }
        let mut batch = WriteSet::default();
        let account = Account {
            address: address.to_string(),
            password_hash: password_hash.to_string(),
            created: now_secs(),
        };
        batch.insert(keys::account(address), json(&account));
        let first = self.reserve_ids(&mut batch, "mailbox", DEFAULT_MAILBOXES.len() as u64)?;
        for ((name, special), id) in DEFAULT_MAILBOXES.into_iter().zip(first..) {
            Inner::new_mailbox(&mut batch, id, address, name, special);
            batch.insert(keys::subscription(address, name), []);
        }
        self.apply(batch)
    }

    fn delete_account(&self, address: &str) -> Result<()> {
        let _w = self.lock();
        if !self.tree.contains_key(keys::account(address))? {
            return Err(StoreError::NotFound(format!("account {address}")));
        }
        let mut batch = WriteSet::default();
        let mut unref = Vec::new();
        for mb in self.mailboxes(address)? {
            self.remove_mailbox(&mut batch, &mb, &mut unref)?;
        }
        let changes: Vec<_> = unref.into_iter().map(|b| (b, -1)).collect();
        let gone = self.adjust_refs(&mut batch, &changes)?;
        for item in self.tree.scan_prefix(keys::subscriptions_of(address)) {
            batch.remove(item?.0);
        }
        batch.remove(keys::account(address));
        self.apply_with(batch, gone)
    }

    fn set_password(&self, address: &str, password_hash: &str) -> Result<()> {
        let _w = self.lock();
        let mut account = self
            .account(address)?
            .ok_or_else(|| StoreError::NotFound(format!("account {address}")))?;
        account.password_hash = password_hash.to_string();
        let mut batch = WriteSet::default();
        batch.insert(keys::account(address), json(&account));
        self.apply(batch)
    }

    fn account(&self, address: &str) -> Result<Option<Account>> {
        match self.get(&keys::account(address))? {
            Some(v) => Ok(Some(from_json("account", &v)?)),
            None => Ok(None),
        }
    }

    fn accounts(&self) -> Result<Vec<Account>> {
        Ok(self
            .scan_json::<Account>(keys::ACCOUNT, "account")?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    fn add_domain(&self, domain: &str) -> Result<()> {
        let _w = self.lock();
        if self.tree.contains_key(keys::domain(domain))? {
            return Err(StoreError::Exists(format!("domain {domain}")));
        }
        let mut batch = WriteSet::default();
        batch.insert(keys::domain(domain), []);
        self.apply(batch)
    }

    fn delete_domain(&self, domain: &str) -> Result<()> {
        let _w = self.lock();
        if !self.tree.contains_key(keys::domain(domain))? {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        let mut batch = WriteSet::default();
        batch.remove(keys::domain(domain));
        self.apply(batch)
    }

    fn domains(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([keys::DOMAIN]) {
            let (k, _) = item?;
            out.push(String::from_utf8_lossy(&k[1..]).into_owned());
        }
        Ok(out)
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        Ok(self.get(&keys::domain(domain))?.is_some())
    }

    fn set_alias(&self, source: &str, targets: &[String]) -> Result<()> {
        if targets.is_empty() {
            return Err(StoreError::Invalid("an alias needs at least one target".into()));
        }
        let _w = self.lock();
        let mut batch = WriteSet::default();
        batch.insert(keys::alias(source), json(&targets));
        self.apply(batch)
    }

    fn delete_alias(&self, source: &str) -> Result<()> {
        let _w = self.lock();
        if !self.tree.contains_key(keys::alias(source))? {
            return Err(StoreError::NotFound(format!("alias {source}")));
        }
        let mut batch = WriteSet::default();
        batch.remove(keys::alias(source));
        self.apply(batch)
    }

    fn alias(&self, source: &str) -> Result<Option<Vec<String>>> {
        match self.get(&keys::alias(source))? {
            Some(v) => Ok(Some(from_json("alias", &v)?)),
            None => Ok(None),
        }
    }

    fn aliases(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.scan_json(keys::ALIAS, "alias")
    }
}
