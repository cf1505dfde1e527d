pub async fn demo(_o: crate::cluster::ClusterOptions) -> anyhow::Result<bool> { Ok(true) }
