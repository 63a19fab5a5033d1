//! `EtcdDcs`: the [`Dcs`](crate::Dcs) trait over etcd v3 (to be written).
