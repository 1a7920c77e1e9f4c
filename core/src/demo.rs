//! The synthetic population: the embedded default that lets `eligd` run with no flags and
//! no external service, and the data of tests and benchmarks.
//!
//! It is generated household by household (a main insured person or a pensioner, then
//! their dependents), so every dependent points at a main insured person that exists, and
//! it streams: member `i` depends only on the seed, `i` and the reference date, so 45
//! million members are produced without holding them. Proportions follow the domain: most
//! people are dependents, a fifth of households are pensioners with open-ended coverage,
//! and a few percent are expired, suspended, deceased or also insured elsewhere.

use crate::dates::Day;
use crate::member::{
    Booklet, Kind, Member, OtherInsurer, Relation, Scheme, Service, Services, Status,
};
use crate::national_id::NationalId;

/// Multiplier of the bijection from a member's ordinal to its ID prefix: odd and not a
/// multiple of 5, so it is invertible modulo 10^9 and IDs never repeat.
const ID_MULTIPLIER: u64 = 387_420_489;
const BOOKLET_MULTIPLIER: u64 = 1_162_261_467;

const GIVEN_NAMES: &[&str] = &[
    "علی",
    "محمد",
    "حسین",
    "رضا",
    "مهدی",
    "امیر",
    "حمید",
    "سعید",
    "مجید",
    "کاظم",
    "فاطمه",
    "زهرا",
    "مریم",
    "سارا",
    "نرگس",
    "لیلا",
    "مینا",
    "الهام",
    "شیرین",
    "پریسا",
    "یوسف",
    "داوود",
    "نسرین",
    "آرش",
];
const FAMILY_NAMES: &[&str] = &[
    "رضایی",
    "محمدی",
    "حسینی",
    "احمدی",
    "کریمی",
    "موسوی",
    "جعفری",
    "کاظمی",
    "رحیمی",
    "صادقی",
    "نوری",
    "قاسمی",
    "اکبری",
    "مرادی",
    "عباسی",
    "طاهری",
    "زارعی",
    "شریفی",
    "باقری",
    "یزدانی",
];
const CONDITIONS: &[&str] = &[
    "dialysis",
    "thalassemia",
    "hemophilia",
    "ms",
    "cancer",
    "transplant",
];
const INSURERS: &[&str] = &[
    "salamat",
    "armed_forces",
    "imam_khomeini_relief",
    "bank_melli",
];

/// The most members one population can hold (national IDs are drawn from 10^9 prefixes).
pub const MAX_DEMO_MEMBERS: u64 = 900_000_000;

/// splitmix64: a stateless mix of (seed, member ordinal, purpose) into 64 random bits.
fn mix(seed: u64, n: u64, salt: u64) -> u64 {
    let mut z =
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Dice {
    seed: u64,
    n: u64,
}

impl Dice {
    /// A uniform number in `0..bound` for this member and purpose.
    fn below(&self, salt: u64, bound: u64) -> u64 {
        mix(self.seed, self.n, salt) % bound.max(1)
    }
    /// True with probability `permille / 1000`.
    fn chance(&self, salt: u64, permille: u64) -> bool {
        self.below(salt, 1000) < permille
    }
    fn pick<'a>(&self, salt: u64, items: &[&'a str]) -> &'a str {
        items[self.below(salt, items.len() as u64) as usize]
    }
}

/// The deterministic generator: the same (members, seed, today) gives the same population.
pub struct Generator {
    seed: u64,
    today: Day,
    next_ordinal: u64,
    emitted: u64,
    limit: u64,
    pending: std::vec::IntoIter<Member>,
    id_offset: u64,
}

impl Generator {
    pub fn new(members: u64, seed: u64, today: Day) -> Generator {
        Generator {
            seed,
            today,
            next_ordinal: 0,
            emitted: 0,
            limit: members.min(MAX_DEMO_MEMBERS),
            pending: Vec::new().into_iter(),
            id_offset: mix(seed, 0, 1) % 1_000_000_000,
        }
    }

    /// The next unused valid national ID (skipping the same-digit prefixes).
    fn next_id(&mut self) -> NationalId {
        loop {
            let ordinal = self.next_ordinal;
            self.next_ordinal += 1;
            let prefix = (ordinal.wrapping_add(self.id_offset) % 1_000_000_000) * ID_MULTIPLIER
                % 1_000_000_000;
            if let Ok(id) = NationalId::from_prefix(prefix as u32) {
                return id;
            }
        }
    }

    fn household(&mut self) -> Vec<Member> {
        let head_id = self.next_id();
        let dice = Dice {
            seed: self.seed,
            n: self.next_ordinal,
        };
        let pensioner = dice.chance(1, 180);
        let family = dice.pick(2, FAMILY_NAMES);
        let scheme = if pensioner {
            Scheme::Pensioner
        } else {
            match dice.below(3, 100) {
                0..=69 => Scheme::Mandatory,
                70..=79 => Scheme::SelfEmployed,
                80..=87 => Scheme::Voluntary,
                88..=92 => Scheme::Driver,
                93..=96 => Scheme::Housewife,
                _ => Scheme::Other,
            }
        };
        let head_until = if pensioner {
            (dice.chance(4, 50)).then(|| self.today.plus_days(dice.below(5, 720) as i32 + 1))
        } else {
            let expired_permille = if matches!(scheme, Scheme::Voluntary | Scheme::SelfEmployed) {
                150
            } else {
                80
            };
            if dice.chance(6, expired_permille) {
                Some(self.today.plus_days(-(dice.below(7, 365) as i32) - 1))
            } else {
                Some(self.today.plus_days(dice.below(8, 120) as i32))
            }
        };
        let head_services = if dice.chance(9, 100) && !pensioner {
            Services::all().without(Service::Dental)
        } else {
            Services::all()
        };
        let head = self.person(
            head_id,
            if pensioner {
                Kind::Pensioner
            } else {
                Kind::Main
            },
            None,
            None,
            scheme,
            head_until,
            head_services,
            family,
        );
        let dependents = match (pensioner, dice.below(10, 100)) {
            (false, 0..=29) | (true, 0..=49) => 0,
            (false, 30..=54) | (true, 50..=89) => 1,
            (false, 55..=79) | (true, _) => 2,
            (false, 80..=94) => 3,
            (false, _) => 4,
        };
        let mut household = vec![head];
        for k in 0..dependents {
            let id = self.next_id();
            let d = Dice {
                seed: self.seed,
                n: self.next_ordinal,
            };
            let relation = match (k, d.below(11, 100)) {
                (_, 0..=4) => Relation::Parent,
                (0, _) => Relation::Spouse,
                _ => Relation::Child,
            };
            // Children sometimes have their own end (ageing out); most follow the main insured.
            let until = (relation == Relation::Child && d.chance(12, 100))
                .then(|| self.today.plus_days(d.below(13, 1000) as i32 - 100));
            let services = if d.chance(14, 50) {
                head_services.without(Service::Dental)
            } else {
                head_services
            };
            household.push(self.person(
                id,
                Kind::Dependent,
                Some(head_id),
                Some(relation),
                scheme,
                until,
                services,
                family,
            ));
        }
        household
    }

    #[allow(clippy::too_many_arguments)]
    fn person(
        &self,
        id: NationalId,
        kind: Kind,
        main: Option<NationalId>,
        relation: Option<Relation>,
        scheme: Scheme,
        coverage_until: Option<Day>,
        services: Services,
        family: &str,
    ) -> Member {
        let ordinal = self.next_ordinal;
        let d = Dice {
            seed: self.seed,
            n: ordinal,
        };
        let status_roll = d.below(20, 1000);
        let (suspended, deceased) = if kind == Kind::Dependent {
            (5, 2)
        } else {
            (20, 10)
        };
        let status = if status_roll < deceased {
            Status::Deceased
        } else if status_roll < deceased + suspended {
            Status::Suspended
        } else {
            Status::Active
        };
        let special_conditions = if d.chance(21, 20) {
            vec![d.pick(22, CONDITIONS).to_string()]
        } else {
            Vec::new()
        };
        let other_insurers = if d.chance(23, 60) {
            vec![OtherInsurer {
                code: d.pick(24, INSURERS).to_string(),
                primary: d.chance(25, 300),
            }]
        } else {
            Vec::new()
        };
        let booklet_no = d.chance(26, 920).then(|| {
            // "93" + ten digits, a bijection of the ordinal so booklets never repeat.
            let ten = ordinal.wrapping_mul(BOOKLET_MULTIPLIER) % 10_000_000_000;
            Booklet(10_u64.pow(12) + 93 * 10_u64.pow(10) + ten)
        });
        Member {
            national_id: id,
            version: 1 + d.below(27, 50),
            kind,
            main_national_id: main,
            relation,
            scheme,
            status,
            coverage_until: coverage_until.map(|day| day.0),
            services,
            special_conditions,
            other_insurers,
            booklet_no,
            display_name: Some(format!("{} {}", d.pick(28, GIVEN_NAMES), family)),
        }
    }
}

impl Iterator for Generator {
    type Item = Member;

    fn next(&mut self) -> Option<Member> {
        if self.emitted >= self.limit {
            return None;
        }
        loop {
            if let Some(m) = self.pending.next() {
                self.emitted += 1;
                return Some(m);
            }
            self.pending = self.household().into_iter();
        }
    }
}

#[cfg(test)]
mod tests;
