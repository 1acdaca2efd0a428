//! Word lists for the demo CRM: Russian names, companies, places.

pub(crate) const MALE_FIRST: &[(&str, &str)] = &[
    ("Александр", "aleksandr"), ("Дмитрий", "dmitry"), ("Максим", "maksim"), ("Сергей", "sergey"),
    ("Андрей", "andrey"), ("Алексей", "aleksey"), ("Артём", "artem"), ("Илья", "ilya"), ("Кирилл", "kirill"),
    ("Михаил", "mikhail"), ("Никита", "nikita"), ("Евгений", "evgeny"), ("Павел", "pavel"), ("Роман", "roman"),
    ("Владимир", "vladimir"), ("Игорь", "igor"),
];
pub(crate) const FEMALE_FIRST: &[(&str, &str)] = &[
    ("Анна", "anna"), ("Мария", "maria"), ("Елена", "elena"), ("Ольга", "olga"), ("Наталья", "natalia"),
    ("Екатерина", "ekaterina"), ("Татьяна", "tatiana"), ("Ирина", "irina"), ("Светлана", "svetlana"),
    ("Юлия", "yulia"), ("Дарья", "daria"), ("Ксения", "ksenia"), ("Алина", "alina"), ("Виктория", "viktoria"),
];
/// Surname stems: the male form; the female form adds "а".
pub(crate) const SURNAMES: &[(&str, &str)] = &[
    ("Иванов", "ivanov"), ("Смирнов", "smirnov"), ("Кузнецов", "kuznetsov"), ("Попов", "popov"),
    ("Васильев", "vasiliev"), ("Петров", "petrov"), ("Соколов", "sokolov"), ("Михайлов", "mikhailov"),
    ("Новиков", "novikov"), ("Фёдоров", "fedorov"), ("Морозов", "morozov"), ("Волков", "volkov"),
    ("Алексеев", "alekseev"), ("Лебедев", "lebedev"), ("Семёнов", "semenov"), ("Егоров", "egorov"),
    ("Павлов", "pavlov"), ("Козлов", "kozlov"), ("Степанов", "stepanov"), ("Николаев", "nikolaev"),
    ("Орлов", "orlov"), ("Андреев", "andreev"), ("Макаров", "makarov"), ("Никитин", "nikitin"),
    ("Захаров", "zakharov"), ("Зайцев", "zaitsev"), ("Соловьёв", "soloviev"), ("Борисов", "borisov"),
];
pub(crate) const COMPANY_WORDS: &[&str] = &[
    "Альфа", "Вектор", "Гранит", "Северный", "Восток", "Меридиан", "Техно", "Строй", "Логистик", "Агро",
    "Энерго", "Сфера", "Профи", "Ресурс", "Дельта", "Октава", "Старт", "Кедр", "Волга", "Урал", "Балтика",
    "Импульс", "Форум", "Орбита",
];
pub(crate) const COMPANY_FORMS: &[&str] = &["ООО", "АО", "ИП", "ООО", "ООО"];
pub(crate) const INDUSTRIES: &[&str] = &[
    "retail", "manufacturing", "construction", "it", "logistics", "healthcare", "education", "finance",
    "hospitality", "agriculture",
];
/// (country, city, weight)
pub(crate) const CITIES: &[(&str, &str, u32)] = &[
    ("RU", "Москва", 30), ("RU", "Санкт-Петербург", 16), ("RU", "Новосибирск", 6), ("RU", "Екатеринбург", 6),
    ("RU", "Казань", 6), ("RU", "Нижний Новгород", 5), ("RU", "Краснодар", 5), ("RU", "Самара", 4),
    ("RU", "Ростов-на-Дону", 4), ("KZ", "Алматы", 5), ("KZ", "Астана", 3), ("BY", "Минск", 6),
];
/// (source, weight); `None` = not recorded.
pub(crate) const SOURCES: &[(Option<&str>, u32)] = &[
    (Some("ads"), 30), (Some("website"), 25), (Some("referral"), 15), (Some("cold_call"), 15),
    (Some("exhibition"), 10), (None, 5),
];
pub(crate) const TEAMS: &[&str] = &["Москва", "Северо-Запад", "Регионы", "Корпоративные", "Сибирь", "Юг"];
/// (product, min rubles, max rubles)
pub(crate) const PRODUCTS: &[(&str, i64, i64)] = &[
    ("CRM Старт", 30_000, 80_000), ("CRM Бизнес", 100_000, 400_000), ("Внедрение", 200_000, 1_500_000),
    ("Поддержка", 20_000, 120_000), ("Обучение", 15_000, 60_000),
];
pub(crate) const LOSS_REASONS: &[&str] = &["Дорого", "Выбрали конкурента", "Нет бюджета", "Не дозвонились", "Неактуально"];
pub(crate) const EMAIL_SUBJECTS: &[&str] = &[
    "Коммерческое предложение", "Счёт на оплату", "Договор", "Вопрос по внедрению", "Презентация", "Встреча",
];
pub(crate) const CHAT_TEXTS: &[&str] = &[
    "Добрый день! Есть вопрос по тарифу", "Спасибо, посмотрим", "Когда сможете созвониться?",
    "Отправил документы", "Подскажите сроки", "Ок, договорились",
];
