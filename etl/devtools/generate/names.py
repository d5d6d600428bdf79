"""Name, address and contact pools the people are drawn from (accents, ligatures, particles)."""

from __future__ import annotations

# Share of Germanic surnames per department (Alsace, Moselle).
_GERMAN_SHARE = {"067": 0.4, "068": 0.35, "057": 0.2}

# fmt: off
# (postcode, INSEE code, postal label) per department.
_COMMUNES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "054": (("54000", "54395", "NANCY"), ("54300", "54329", "LUNEVILLE")),
    "055": (("55100", "55545", "VERDUN"), ("55000", "55029", "BAR LE DUC")),
    "057": (("57000", "57463", "METZ"), ("57100", "57672", "THIONVILLE"),
            ("57200", "57631", "SARREGUEMINES")),
    "088": (("88000", "88160", "EPINAL"), ("88100", "88413", "ST DIE DES VOSGES")),
    "008": (("08000", "08105", "CHARLEVILLE MEZIERES"), ("08200", "08409", "SEDAN")),
    "010": (("10000", "10387", "TROYES"), ("10100", "10333", "ROMILLY SUR SEINE")),
    "051": (("51100", "51454", "REIMS"), ("51000", "51108", "CHALONS EN CHAMPAGNE"),
            ("51200", "51230", "EPERNAY")),
    "052": (("52000", "52121", "CHAUMONT"), ("52100", "52448", "ST DIZIER")),
    "067": (("67000", "67482", "STRASBOURG"), ("67500", "67180", "HAGUENAU"),
            ("67600", "67462", "SELESTAT")),
    "068": (("68100", "68224", "MULHOUSE"), ("68000", "68066", "COLMAR")),
}
_STREETS = (
    "RUE DE LA REPUBLIQUE", "AVENUE FOCH", "RUE DU GENERAL LECLERC", "RUE DES JARDINS",
    "IMPASSE DES LILAS", "RUE JEANNE D'ARC", "QUAI DES BATELIERS", "RUE DE L'EGLISE",
    "ALLEE DES TILLEULS", "RUE PASTEUR", "RUE VICTOR HUGO", "CHEMIN DU MOULIN",
    "RUE DES VIGNES", "PLACE DE LA GARE", "RUE SAINT-NICOLAS", "ROUTE DE COLMAR",
)
_SCHOOL_NAMES = (
    "JEAN MOULIN", "VICTOR HUGO", "JULES FERRY", "LA FONTAINE", "GEORGES BRASSENS",
    "JACQUES PREVERT", "MARIE CURIE", "PIERRE ET MARIE CURIE", "LOUIS PASTEUR", "CAMILLE CLAUDEL",
    "JEANNE D'ARC", "ALBERT SCHWEITZER", "CHARLES DE GAULLE", "ROBERT SCHUMAN", "PAUL VERLAINE",
    "ARTHUR RIMBAUD", "GEORGES DE LA TOUR", "STANISLAS", "JEAN ZAY", "SIMONE VEIL",
)

# Surnames in display case; SIECLE upper-cases them.
_SURNAMES_FR = (
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
    "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
    "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier", "Chevalier", "François",
    "Legrand", "Gauthier", "Perrin", "Robin", "Clément", "Morin", "Nicolas", "Henry", "Mathieu",
    "Masson", "Marchand", "Duval", "Denis", "Lemaire", "Noël", "Dufour", "Meunier", "Brun",
    "Giraud", "Joly", "Rivière", "Lucas", "Brunet", "Gaillard", "Barbier", "Arnaud", "Gérard",
    "Roche", "Renard", "Colin", "Vidal", "Caron", "Picard", "Roger", "Fabre", "Aubert",
    "Lemoine", "Renaud", "Dumas", "Lacroix", "Olivier", "Bourgeois", "Benoît", "Leclerc",
    "Rolland", "Guillaume", "Lecomte", "Hubert", "Carpentier", "Moulin", "Deschamps", "Huet",
    "Fleury", "Poirier", "Aubry", "Guyot", "Carré", "Ménard", "Maillard", "Bailly", "Hervé",
    "Léger", "Bouvier", "Prévost", "Perrot", "Germain", "Breton", "Rémy", "Pelletier",
    "Lévêque", "Barré", "Marchal", "Humbert", "Barthélemy", "Lemaître", "Maréchal", "Bénard",
    "Étienne", "Lecœur", "Cœurdevey", "Le Goff", "Le Gall", "Le Roux", "de La Fontaine",
    "de Villiers", "Du Pont", "de Saint-Exupéry", "N'Diaye", "D'Angelo", "D'Almeida", "O'Neill",
    "Diallo", "Traoré", "Nguyen", "Benali", "Haddad", "Yilmaz", "Çelik", "Öztürk", "Da Silva",
    "Dos Santos", "Ferreira", "Martínez", "Garcia", "Lopez", "Rodriguez", "Mammeri", "Belkacem",
    "Saint-Martin", "Dupont-Aignan", "Pierre-Louis", "Adam", "Antoine", "Aubin", "Bailly",
    "Barre", "Baudry", "Berger", "Bertin", "Besson", "Blanchard", "Bonnin", "Bouchard",
    "Boucher", "Bouchet", "Boulanger", "Bourdon", "Bousquet", "Briand", "Brunel", "Camus",
    "Carlier", "Chauvin", "Charpentier", "Chevallier", "Collet", "Collin", "Cordier", "Cousin",
    "Daniel", "Delaunay", "Delmas", "Descamps", "Devaux", "Drouet", "Dumont", "Dupuis",
    "Duris", "Ferrand", "Fleurot", "Fortin", "Gaudin", "Gilbert", "Gillet", "Girault", "Godard",
    "Grand", "Gros", "Guichard", "Guillot", "Hamon", "Hébert", "Hoarau", "Jacob", "Jacquet",
    "Jourdan", "Julien", "Labbé", "Laine", "Lamy", "Langlois", "Laporte", "Lebon", "Lebrun",
    "Leconte", "Lejeune", "Lemonnier", "Leroux", "Lesage", "Lévy", "Loiseau", "Maillot",
    "Mallet", "Marty", "Maurice", "Michaud", "Millet", "Monnier", "Navarro", "Paris", "Pasquier",
    "Payet", "Pelé", "Perret", "Philippe", "Pichon", "Poulain", "Pruvost", "Raynaud", "Riviere",
    "Royer", "Salmon", "Schmitt", "Tessier", "Thiébaut", "Thiery", "Vasseur", "Verdier",
    "Weiss", "Mangin", "Thouvenin", "Colnot", "Ménétrier", "Grandjean", "Didierjean", "Jacquot",
)
_SURNAMES_DE = (
    "Müller", "Schmitt", "Schneider", "Meyer", "Weber", "Fischer", "Wagner", "Becker",
    "Schäfer", "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz",
    "Zimmermann", "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Krause", "Lehmann",
    "Huber", "Kaiser", "Fuchs", "Groß", "Jäger", "Vogt", "Haas", "Keller", "Roth", "Beck",
    "Baumann", "Böhm", "Kraus", "Schumacher", "Krämer", "Vogel", "Stein", "Jung", "Sommer",
    "Seiler", "Heitz", "Kuntz", "Hoffmann", "Bürckel", "Wendling", "Ehrhart", "Schaeffer",
    "Oberlé", "Kieffer", "Kientz", "Grosskopf", "Van der Berg", "Van den Bossche", "Strauß",
    "Weiß", "Oßwald",
)
_BOYS = (
    "Lucas", "Hugo", "Louis", "Gabriel", "Léo", "Raphaël", "Arthur", "Jules", "Adam", "Maël",
    "Noé", "Nathan", "Théo", "Tom", "Timéo", "Ethan", "Sacha", "Paul", "Mathis", "Noah",
    "Baptiste", "Enzo", "Clément", "Maxime", "Antoine", "Jean-Marie", "Jean-Baptiste",
    "Pierre-Louis", "Loïc", "Anaël", "Gaëtan", "Rémi", "Valentin", "Yanis", "Mohamed",
    "Ibrahim", "Kévin", "Thibaut", "Côme", "Eliott", "Grégoire", "Émile", "Étienne", "Noël",
    "Joël", "Lukas", "Matthias", "Jonas", "Félix", "Aloïs", "Mathéo", "Ilyès", "Aaron", "Alexis",
    "Amir", "Axel", "Bastien", "Benjamin", "Corentin", "Dylan", "Evan", "Gabin", "Gaspard",
    "Hamza", "Isaac", "Kylian", "Lenny", "Liam", "Loris", "Marius", "Martin", "Milo", "Nolan",
    "Oscar", "Quentin", "Robin", "Samuel", "Simon", "Tiago", "Victor", "Yann", "Zacharie",
)
_GIRLS = (
    "Emma", "Jade", "Louise", "Alice", "Chloé", "Lina", "Léa", "Rose", "Anna", "Mila", "Inès",
    "Ambre", "Julia", "Zoé", "Léna", "Manon", "Camille", "Lou", "Éva", "Agathe", "Maëlys",
    "Maïwenn", "Anaïs", "Héloïse", "Clémence", "Noémie", "Océane", "Gaëlle", "Marie-Hélène",
    "Anne-Sophie", "Marie-Ève", "Salomé", "Sarah", "Aïcha", "Yasmine", "Myriam", "Zoë",
    "Chloë", "Lætitia", "Bénédicte", "Ségolène", "Jeanne", "Hélène", "Lilou", "Romy", "Léonie",
    "Adèle", "Apolline", "Capucine", "Charlotte", "Clara", "Constance", "Elsa", "Emy", "Iris",
    "Jasmine", "Juliette", "Justine", "Lana", "Lola", "Lucie", "Margaux", "Marion", "Mathilde",
    "Maya", "Nina", "Nour", "Pauline", "Romane", "Sofia", "Victoire", "Violette", "Yaëlle",
)
_MEN = (
    "Jean-Marie", "Benoît", "Jérôme", "François", "Stéphane", "Frédéric", "Sébastien",
    "Nicolas", "Olivier", "Laurent", "Christophe", "Thierry", "Pascal", "Éric", "Hervé", "Joël",
    "Loïc", "Mickaël", "Rémi", "Aurélien", "Grégoire", "Cédric", "Jean-François", "Jean-Luc",
    "Karim", "Mehdi", "Jürgen", "Hans-Peter", "Matthias", "David", "Julien", "Guillaume",
    "Romain", "Jean-Noël", "Gérard", "José",
)
_WOMEN = (
    "Marie-Hélène", "Anne-Sophie", "Françoise", "Cécile", "Mélanie", "Sandrine", "Nathalie",
    "Isabelle", "Véronique", "Sophie", "Aurélie", "Élodie", "Émilie", "Lætitia", "Béatrice",
    "Gwenaëlle", "Ségolène", "Bénédicte", "Hélène", "Fatima", "Aïcha", "Myriam", "Céline",
    "Stéphanie", "Virginie", "Delphine", "Karine", "Séverine", "Maryline", "Noëlle",
    "Marie-Ève", "Agnès", "Christèle", "Zoé", "Maïté", "Chloé",
)
_MAIL_DOMAINS = (
    "gmail.com", "orange.fr", "free.fr", "laposte.net", "hotmail.fr", "yahoo.fr", "sfr.fr",
    "wanadoo.fr", "outlook.fr", "icloud.com",
)
_PROFESSIONS = (
    "10", "21", "22", "23", "31", "33", "34", "35", "37", "38", "42", "43", "44", "45", "46",
    "47", "48", "52", "53", "54", "55", "56", "61", "66", "69", "71", "72", "73", "76", "81",
    "82", "99",
)
_REGIMES = ("2", "21", "24", "24", "24", "29", "0", "3")
# fmt: on
